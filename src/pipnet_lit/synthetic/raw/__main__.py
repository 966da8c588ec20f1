from pipnet_lit.synthetic.raw import main

main()
