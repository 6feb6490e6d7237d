from data.synthav.generate import main

main()
